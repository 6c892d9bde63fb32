"""Flask side of Aurum: the application factory and its blueprints (the job-service issue)."""
