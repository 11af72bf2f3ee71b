// WebShop's search engine as the reference for environments/tests/webshop_search.rs: Anserini
// 0.14.3 (the jar inside pyserini 0.17.0, which WebShop pins), driven the way WebShop drives it.
//
//   java -cp anserini-0.14.3-fatjar.jar WebShopSearch.java DOCS_DIR INDEX_DIR TEXTS QUERIES OUT K
//
// 1. Indexes DOCS_DIR (documents.jsonl of {"id", "contents"}) with the arguments of WebShop's
//    search_engine/run_indexing.sh (`python -m pyserini.index.lucene` runs this same class).
// 2. Writes the analyzer's terms for each line of TEXTS: `A <tab> line <tab> terms joined by ' '`.
// 3. Searches each line of QUERIES with SimpleSearcher.search(query, K), which pyserini's
//    LuceneSearcher.search calls: `S <tab> query <tab> rank <tab> docid <tab> score`.
import io.anserini.analysis.AnalyzerUtils;
import io.anserini.index.IndexCollection;
import io.anserini.search.SimpleSearcher;

import java.io.BufferedWriter;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.util.List;

public class WebShopSearch {
  public static void main(String[] args) throws Exception {
    if (args.length != 6) {
      throw new IllegalArgumentException("usage: WebShopSearch DOCS_DIR INDEX_DIR TEXTS QUERIES OUT K");
    }
    IndexCollection.main(new String[] {
        "-collection", "JsonCollection", "-input", args[0], "-index", args[1],
        "-generator", "DefaultLuceneDocumentGenerator", "-threads", "1",
        "-storePositions", "-storeDocvectors", "-storeRaw"});
    int k = Integer.parseInt(args[5]);
    List<String> texts = Files.readAllLines(Paths.get(args[2]), StandardCharsets.UTF_8);
    List<String> queries = Files.readAllLines(Paths.get(args[3]), StandardCharsets.UTF_8);
    try (BufferedWriter out = Files.newBufferedWriter(Paths.get(args[4]), StandardCharsets.UTF_8);
         SimpleSearcher searcher = new SimpleSearcher(args[1])) {
      for (int line = 0; line < texts.size(); line++) {
        List<String> terms = AnalyzerUtils.analyze(IndexCollection.DEFAULT_ANALYZER, texts.get(line));
        out.write("A\t" + line + "\t" + String.join(" ", terms) + "\n");
      }
      for (int query = 0; query < queries.size(); query++) {
        SimpleSearcher.Result[] hits = searcher.search(queries.get(query), k);
        for (int rank = 0; rank < hits.length; rank++) {
          out.write("S\t" + query + "\t" + rank + "\t" + hits[rank].docid + "\t" + hits[rank].score + "\n");
        }
      }
    }
  }
}
