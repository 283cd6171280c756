"""The gate stack, sizing and protections: whether a wanted trade may go to the broker."""
