"""The LMStack controller: REST API, OpenAI gateway, scheduler, fleet, store."""
