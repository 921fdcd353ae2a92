"""The inbound pipeline (decode -> lane -> brain -> stage) and the batch (commit -> publish -> ack)."""
