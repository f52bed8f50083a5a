"""tollgate audit-log: the append-only, hash-chained, signed audit trail of the platform."""
