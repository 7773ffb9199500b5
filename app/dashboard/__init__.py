"""The manager dashboard: rollups kept current by the write path, figures, charts, forecast."""
