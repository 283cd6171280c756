"""`esml monitor`: a local web page that follows an engine through its journal."""
