"""Serving: the SavedModel's signatures (`serving_module`), the export for TF Serving (`export`) and the
loader back to a `tfd.Distribution` (`saved_model_distribution`)."""
