"""Power-law fits, bootstrap, extrapolation backtests, recommendation and plots."""
