"""tollgate monitor: drift, performance, staleness and latency of served models, with alerts and a dashboard."""
