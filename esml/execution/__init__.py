"""Order intents, brackets, exits and the order state machine."""
