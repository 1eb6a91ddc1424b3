"""The experiment workbench: lr finder, sweeps over CV, experiment tracking, ONNX export.

Each module is one capability behind one `kit` command (lr_find, sweep, export) or a hook of
training and prediction (track). They reuse kit's own training and prediction paths.
"""
