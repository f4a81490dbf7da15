-- depends: 0002_projection_registry
-- Why an operator skipped a failed event (``liudong projections skip … --reason``): a skip is
-- never silent, so it says who (skipped_by), when (skipped_at) and why.

ALTER TABLE projection_failures ADD COLUMN skip_reason text;
