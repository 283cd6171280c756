"""Every signal, decision, order and fill, recorded: SQLite locally, DynamoDB on AWS."""
