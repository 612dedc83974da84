"""Operations: the `sluice` operator CLI and the canary rollout it and the canary DAG drive."""
