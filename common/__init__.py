"""What connectors and pipeline steps both use; it imports neither of them."""
