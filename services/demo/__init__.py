"""`ctloop demo`: a generated stream with a known concept drift, driven through the stack."""
