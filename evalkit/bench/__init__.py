"""`evalkit bench`: throughput of the real loader and runner on synthetic COCO-sized JPEGs."""
