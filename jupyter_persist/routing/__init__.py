"""Which notebook and cell an execution belongs to (``locator``)."""
