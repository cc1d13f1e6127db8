"""Data for the store: crawling a docs site, the offline Python docs site, HTML to text and chunks, and synthetic
question sets of given shapes for benchmarks and tests."""
