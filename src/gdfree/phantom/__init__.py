"""Synthetic MS cohorts with known truth: anatomy, contrasts, lesions and the BIDS cohort writer."""
