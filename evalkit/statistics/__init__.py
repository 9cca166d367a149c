"""Statistics valid at every sample size: intervals and tests of one run (``summary``) and paired
comparisons of two (``paired``). scipy and statsmodels are imported inside the functions."""
