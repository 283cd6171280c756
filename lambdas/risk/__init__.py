"""Risk: the gate stack over the shared account state; approved trades go to the router."""
