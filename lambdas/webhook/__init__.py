"""TradingView webhook: authenticate, validate, de-duplicate, hand to risk."""
