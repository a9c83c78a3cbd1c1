"""Threshold code in one place: the rules (``rules``), which images and rule made a bundle's threshold (``basis``) and
``edge-ad threshold`` (``rethreshold``). Torch-free."""
