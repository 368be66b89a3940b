"""Fine-tuning: the recipe and the PEFT model it trains."""
