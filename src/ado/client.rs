//! The Azure DevOps HTTP client. (Skeleton: the foundation issue fills in the bodies.)
