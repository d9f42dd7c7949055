"""The domain: trigger resolution, backfill, claims, seed and tokens. No boto3 here."""
