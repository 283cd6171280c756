"""The Broker protocol and its implementations: the paper broker and Tradovate."""
