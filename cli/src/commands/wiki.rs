//! `kiln wiki serve CORPUS --bind ADDR`: the local MediaWiki-API service.

use std::process::ExitCode;
use std::sync::Arc;

use kiln_environments::wiki::{Corpus, Wiki, server};

use crate::args::WikiCommand;
use crate::input_error;

pub async fn wiki(command: WikiCommand) -> anyhow::Result<ExitCode> {
    match command {
        WikiCommand::Serve { corpus, bind } => {
            let corpus = Corpus::load(&corpus).map_err(|error| input_error(error.to_string()))?;
            let pages = corpus.pages().len();
            let listener = tokio::net::TcpListener::bind(&bind)
                .await
                .map_err(|error| input_error(format!("--bind {bind}: {error}")))?;
            let address = listener.local_addr()?;
            eprintln!(
                "kiln wiki: {pages} pages at http://{address}/w/api.php (articles at /wiki/TITLE)"
            );
            server::serve(Arc::new(Wiki::new(corpus)), listener).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
