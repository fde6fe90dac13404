"""Replica heartbeats: every replica of every service says it is alive, what gate version it
applied and what it measured (see ``shared.db.models.ReplicaHeartbeat`` and ``ReplicaSample``)."""
