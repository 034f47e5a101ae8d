"""A trio-native producer and a lookup-aware consumer."""
