"""hivcomorb: multi-label comorbidity prediction for people living with HIV.

The package turns a routine EHR extract into demographic-aware and
demographic-unaware comorbidity models, a demographic recoverability probe,
explanation and fairness audits, and scores for new extracts.
"""

__version__ = "0.1.0"
