//! SAE training (being built).
