"""RealNet (Zhang et al., CVPR 2024): anomaly-aware feature selection (``afs``), the per-level reconstruction
networks G_k (``reconstruction``), reconstruction-residual selection and its segmentation decoder (``rrs``), the
model and its fused graph (``model``), the trainer (``trainer``) and the torch-free family record (``family``).
Empty on purpose: importing the family record must not import torch."""
