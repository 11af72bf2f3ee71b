//! Conversions between the environments crate's types and their wire forms.

use kiln_protocol::env_server::{WireErrorKind, WireEvaluation};

use crate::{EnvErrorKind, Evaluation};

/// The wire kind of an environment error.
pub fn kind_to_wire(kind: EnvErrorKind) -> WireErrorKind {
    match kind {
        EnvErrorKind::UnknownEnv => WireErrorKind::UnknownEnv,
        EnvErrorKind::UnknownSplit => WireErrorKind::UnknownSplit,
        EnvErrorKind::UnknownTask => WireErrorKind::UnknownTask,
        EnvErrorKind::Data => WireErrorKind::Data,
        EnvErrorKind::InvalidOptions => WireErrorKind::InvalidOptions,
        EnvErrorKind::AuxModel => WireErrorKind::AuxModel,
        EnvErrorKind::Crashed => WireErrorKind::Crashed,
        EnvErrorKind::State => WireErrorKind::State,
    }
}

/// The environment error kind of a wire error. `protocol` (host and server disagree about the
/// conversation) is [`EnvErrorKind::Crashed`]: the session cannot go on.
pub fn kind_from_wire(kind: WireErrorKind) -> EnvErrorKind {
    match kind {
        WireErrorKind::UnknownEnv => EnvErrorKind::UnknownEnv,
        WireErrorKind::UnknownSplit => EnvErrorKind::UnknownSplit,
        WireErrorKind::UnknownTask => EnvErrorKind::UnknownTask,
        WireErrorKind::Data => EnvErrorKind::Data,
        WireErrorKind::InvalidOptions => EnvErrorKind::InvalidOptions,
        WireErrorKind::AuxModel => EnvErrorKind::AuxModel,
        WireErrorKind::Crashed | WireErrorKind::Protocol => EnvErrorKind::Crashed,
        WireErrorKind::State => EnvErrorKind::State,
    }
}

pub fn evaluation_to_wire(evaluation: Evaluation) -> WireEvaluation {
    WireEvaluation {
        reward: evaluation.reward,
        components: evaluation.components,
        success: evaluation.success,
        success_judged_only: evaluation.success_judged_only,
        db_hash: evaluation.db_hash,
        info: evaluation.info,
    }
}

pub fn evaluation_from_wire(evaluation: WireEvaluation) -> Evaluation {
    Evaluation {
        reward: evaluation.reward,
        components: evaluation.components,
        success: evaluation.success,
        success_judged_only: evaluation.success_judged_only,
        db_hash: evaluation.db_hash,
        info: evaluation.info,
    }
}
