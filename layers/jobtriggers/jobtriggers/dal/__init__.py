"""Data access: the only code that touches boto3. It returns models and raises domain exceptions."""
