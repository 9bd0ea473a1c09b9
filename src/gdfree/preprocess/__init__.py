"""Preprocessing of real exams: registration, bias correction, brain mask, normalisation, resampling and the
derivation of enhancing labels from pre/post-Gd T1w (SimpleITK throughout; no model download)."""
