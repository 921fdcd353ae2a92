"""Recovery campaigns: events in (engine.recovery.events), campaigns and templates from the tenant
file (campaigns, setup), the platform window rule (window), the scheduler that claims due steps
(scheduler), attribution of orders and the funnel report (report)."""
