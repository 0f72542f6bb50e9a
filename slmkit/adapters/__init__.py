"""Parameter-efficient fine-tuning: LoRA and QLoRA adapters (lora.py) in peft's format (peft_format.py)."""
