"""Dataset recipes: YAML rules that turn public cohorts into the cohort format."""
