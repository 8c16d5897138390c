"""Scoring detection maps against labels as PANORAMA does (picai_eval), with bootstrap CIs and reports."""
