"""Benchmarks and paper experiments. They play both parties (model owner and data owner), so this package alone
may import both `model_owner_server` and `data_owner_client`; neither party imports it."""
