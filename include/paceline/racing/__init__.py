"""Horse racing from The Racing API into the warehouse: loaders, masters, coverage."""
