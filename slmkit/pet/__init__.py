"""PET and iPET (Schick & Schütze 2021): tasks as cloze questions through patterns and verbalizers (YAML data in
slmkit/pet/patterns), scored with an encoder's mask token or a decoder's log-likelihood, trained one model per
pattern through the one training loop."""
