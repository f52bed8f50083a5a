-- A checkpoint's range tree at level 6 (merkle.BLOCK_HEIGHT): the roots of its blocks of 64 rows, built
-- level by level (the last, shorter block's root as the tree carries it up), concatenated. A receipt reads
-- the 64 row hashes of its row's block and these roots instead of every row of the range: its audit path
-- costs O(64 + n/64) hashes, not O(n). Not signed: a receipt's path is checked against the signed
-- merkle_root, by the service before it answers and by anyone offline. NULL for older checkpoints.
ALTER TABLE audit_checkpoints ADD COLUMN block_roots bytea CHECK (octet_length(block_roots) % 32 = 0);
