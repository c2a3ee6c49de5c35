"""Data in and out: Parquet export and EAP-IG JSON graph files."""
