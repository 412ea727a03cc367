"""The chaos drill: the drill, its edges (processes, publisher, SQL reads) and its oracle."""
