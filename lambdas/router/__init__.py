"""Router: one order at Tradovate per client id, recorded in the orders table."""
