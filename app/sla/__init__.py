"""SLA clocks in business time."""
