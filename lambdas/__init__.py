"""AWS Lambda handlers: thin layers that parse, call `esml`, and answer."""
