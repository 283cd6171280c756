"""esml: machine-learning trading of CME E-mini S&P 500 futures."""
