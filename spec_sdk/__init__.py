"""spec_sdk: lossless speculative decoding, embeddable and async."""
