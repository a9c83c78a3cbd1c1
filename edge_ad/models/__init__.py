"""Model families (one folder each), the family table (``families``) and the bundle loader (``registry``)."""
