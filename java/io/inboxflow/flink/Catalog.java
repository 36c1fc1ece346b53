package io.inboxflow.flink;

import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.DeserializationFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.JsonNodeFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * The product catalog of one {@link CatalogJoin} subtask and the enrichment of one event
 * (docs/DESIGN.md#catalog). Plain Java, no Flink runtime: the operator holds one, the tests
 * drive one through the gateway.
 *
 * <p><b>A product record</b> (conf/schemas/catalog/product.json): a JSON object with
 * {@code product_id} (a string with a non-blank character, required), and optionally
 * {@code name}, {@code category} (strings), {@code price} (a number, at least 0),
 * {@code currency} (3 ASCII letters, upper-cased here), {@code image_url} and {@code url}
 * (strings starting with http:// or https://). Other members are ignored. A record that breaks
 * one of these rules changes nothing and is reported ({@link #apply}). An empty value removes
 * the product named by the record's key (a Kafka tombstone).
 *
 * <p><b>Enrichment</b> ({@link #enrich}) rewrites an event only when the catalog changes
 * something, and only events that name a product: {@code properties} of {@code product_view},
 * {@code cart_add} and {@code cart_remove}, each line of {@code properties.items} of
 * {@code purchase} and {@code checkout_start}. For a product in the catalog, {@code name},
 * {@code category}, {@code image_url} and {@code url} come from the catalog when it has them;
 * {@code price} only when the catalog's currency equals the line's (else the event's) currency,
 * or the event has none (then the catalog's currency is set too). What the catalog lacks keeps
 * the event's value. Never throws: an event it cannot read, or one whose fields the validator
 * would reject (a negative price, a name that is no string, ...), passes unchanged, so the
 * catalog never repairs bad input and the dead-letter record shows what was sent.
 */
public class Catalog {
    public static final String TYPE_KEY = "event_type";
    private static final Set<String> SINGLE = Set.of("product_view", "cart_add", "cart_remove");
    private static final Set<String> LINES = Set.of("purchase", "checkout_start");
    private static final String[] TEXT_FIELDS = {"name", "category", "image_url", "url"};

    /** One product as the catalog holds it; null fields: the catalog does not know them. */
    static final class Product {
        final String name;
        final String category;
        final String imageUrl;
        final String url;
        final BigDecimal price;
        final String currency;

        Product(String name, String category, String imageUrl, String url, BigDecimal price,
                String currency) {
            this.name = name;
            this.category = category;
            this.imageUrl = imageUrl;
            this.url = url;
            this.price = price;
            this.currency = currency;
        }

        String text(String field) {
            switch (field) {
                case "name":
                    return name;
                case "category":
                    return category;
                case "image_url":
                    return imageUrl;
                default:
                    return url;
            }
        }
    }

    /** Why a catalog record was refused: the JSON path of the problem and a short message. */
    public static final class Problem {
        public final String productId;
        public final String path;
        public final String message;

        Problem(String productId, String path, String message) {
            this.productId = productId;
            this.path = path;
            this.message = message;
        }

        @Override
        public String toString() {
            return path + ": " + message;
        }
    }

    private final ObjectMapper json = new ObjectMapper()
            .enable(DeserializationFeature.USE_BIG_DECIMAL_FOR_FLOATS)
            .setNodeFactory(JsonNodeFactory.withExactBigDecimals(true));
    private final Map<String, Product> products = new HashMap<>();
    private final long maxEventBytes;
    /** The product id the last successful {@link #apply} replaced or removed. */
    public String appliedId;

    /** @param maxEventBytes an enriched event larger than this (UTF-8) stays as it was sent */
    public Catalog(long maxEventBytes) {
        this.maxEventBytes = maxEventBytes;
    }

    public int size() {
        return products.size();
    }

    /**
     * Applies one catalog record: {@code value} null or blank removes the product {@code key};
     * otherwise the record replaces what the catalog held for its {@code product_id}.
     *
     * @param key the Kafka record key (null for a file line)
     * @return null when applied, else why the record was refused (the catalog is unchanged)
     */
    public Problem apply(String key, String value) {
        if (value == null || value.isBlank()) {
            String id = key == null ? "" : key.strip();
            if (id.isEmpty()) {
                return new Problem(null, "$", "an empty record without a key names no product");
            }
            products.remove(id);
            appliedId = id;
            return null;
        }
        JsonNode node;
        try {
            node = json.readTree(value);
        } catch (Exception | StackOverflowError e) {
            return new Problem(keyOrNull(key), "$", "not JSON");
        }
        if (node == null || !node.isObject()) {
            return new Problem(keyOrNull(key), "$", "must be an object");
        }
        JsonNode idNode = node.get("product_id");
        if (idNode == null || !idNode.isTextual() || idNode.asText().isBlank()) {
            return new Problem(keyOrNull(key), "$.product_id", "must be a non-blank string");
        }
        String id = idNode.asText().strip();
        if (key != null && !key.strip().equals(id)) {
            return new Problem(id, "$.product_id",
                    "differs from the record key (a compacted topic is keyed by product id)");
        }
        String[] texts = new String[TEXT_FIELDS.length];
        for (int i = 0; i < TEXT_FIELDS.length; i++) {
            String field = TEXT_FIELDS[i];
            JsonNode v = node.get(field);
            if (v == null || v.isNull()) {
                continue;
            }
            if (!v.isTextual()) {
                return new Problem(id, "$." + field, "must be a string");
            }
            if (field.endsWith("url") && !isHttpUrl(v.asText())) {
                return new Problem(id, "$." + field, "must start with http:// or https://");
            }
            texts[i] = v.asText();
        }
        BigDecimal price = null;
        JsonNode p = node.get("price");
        if (p != null && !p.isNull()) {
            if (!p.isNumber()) {
                return new Problem(id, "$.price", "must be a number");
            }
            price = p.decimalValue();
            if (price.signum() < 0) {
                return new Problem(id, "$.price", "must be at least 0");
            }
        }
        String currency = null;
        JsonNode c = node.get("currency");
        if (c != null && !c.isNull()) {
            if (!c.isTextual() || !isCurrency(c.asText())) {
                return new Problem(id, "$.currency", "must be a 3-letter ISO 4217 code");
            }
            currency = c.asText().toUpperCase(Locale.ROOT);
        }
        products.put(id, new Product(texts[0], texts[1], texts[2], texts[3], price, currency));
        appliedId = id;
        return null;
    }

    /** {@link #apply} for tests and the file check: the problem as text, or null. */
    public String problem(String key, String value) {
        Problem problem = apply(key, value);
        return problem == null ? null : problem.toString();
    }

    private static String keyOrNull(String key) {
        return key == null || key.isBlank() ? null : key.strip();
    }

    static boolean isHttpUrl(String s) {
        return s.startsWith("http://") || s.startsWith("https://");
    }

    static boolean isCurrency(String s) {
        if (s.length() != 3) {
            return false;
        }
        for (int i = 0; i < 3; i++) {
            char ch = s.charAt(i);
            if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z'))) {
                return false;
            }
        }
        return true;
    }

    /** {@code raw} with the catalog applied, or {@code raw} itself when nothing changes. */
    public String enrich(String raw) {
        if (raw == null || products.isEmpty() || !raw.contains("\"product_id\"")) {
            return raw;
        }
        try {
            String out = enriched(raw);
            if (out == null || EnvelopeExtractor.hasUnpairedSurrogate(out)) {
                // an escaped lone surrogate would come out as a raw one, which the interpreter
                // cannot take; the validator rejects the event as it was sent
                return raw;
            }
            if (out.length() > maxEventBytes / 3
                    && out.getBytes(StandardCharsets.UTF_8).length > maxEventBytes) {
                return raw; // would become too large: the event is applied as it was sent
            }
            return out;
        } catch (Exception | StackOverflowError e) {
            return raw;
        }
    }

    /** The rewritten event, or null when it stays as it is. */
    private String enriched(String raw) throws Exception {
        JsonNode event = json.readTree(raw);
        if (event == null || !event.isObject()) {
            return null;
        }
        JsonNode type = event.get(TYPE_KEY);
        JsonNode props = event.get("properties");
        if (type == null || !type.isTextual() || props == null || !props.isObject()) {
            return null;
        }
        JsonNode eventCurrency = props.get("currency");
        if (eventCurrency != null
                && !(eventCurrency.isTextual() && isCurrency(eventCurrency.asText()))) {
            return null; // the validator rejects it: leave it as it was sent
        }
        List<ObjectNode> lines = new ArrayList<>();
        if (SINGLE.contains(type.asText())) {
            lines.add((ObjectNode) props);
        } else if (LINES.contains(type.asText())) {
            JsonNode items = props.get("items");
            if (items == null || !items.isArray()) {
                return null;
            }
            for (Iterator<JsonNode> it = items.elements(); it.hasNext(); ) {
                JsonNode item = it.next();
                if (item.isObject()) {
                    lines.add((ObjectNode) item);
                }
            }
        }
        boolean changed = false;
        List<ObjectNode> matched = new ArrayList<>();
        List<Product> found = new ArrayList<>();
        for (ObjectNode line : lines) {
            if (!wellFormed(line)) {
                return null; // the validator rejects it: leave it as it was sent
            }
            Product product = products.get(line.get("product_id").asText().strip());
            if (product != null) {
                matched.add(line);
                found.add(product);
            }
        }
        for (int i = 0; i < matched.size(); i++) {
            changed |= merge(matched.get(i), found.get(i), eventCurrency);
        }
        return changed ? json.writeValueAsString(event) : null;
    }

    /** False when a field the catalog may touch holds something the validator rejects. */
    private static boolean wellFormed(ObjectNode line) {
        JsonNode id = line.get("product_id");
        if (id == null || !id.isTextual()) {
            return false;
        }
        for (String field : TEXT_FIELDS) {
            JsonNode v = line.get(field);
            if (v != null && !v.isTextual()) {
                return false;
            }
        }
        JsonNode price = line.get("price");
        if (price != null && !(price.isNumber() && price.decimalValue().signum() >= 0)) {
            return false;
        }
        JsonNode currency = line.get("currency");
        return currency == null || (currency.isTextual() && isCurrency(currency.asText()));
    }

    private static boolean merge(ObjectNode line, Product product, JsonNode eventCurrency) {
        boolean changed = false;
        for (String field : TEXT_FIELDS) {
            String value = product.text(field);
            JsonNode had = line.get(field);
            if (value != null && (had == null || !value.equals(had.asText()))) {
                line.put(field, value);
                changed = true;
            }
        }
        if (product.price == null) {
            return changed;
        }
        JsonNode own = line.get("currency");
        JsonNode currency = own != null ? own : eventCurrency;
        if (currency == null) {
            if (product.currency != null) {
                line.put("currency", product.currency);
                changed = true;
            }
        } else if (product.currency == null
                || !product.currency.equalsIgnoreCase(currency.asText())) {
            return changed; // another currency: the event's price stays
        }
        JsonNode price = line.get("price");
        if (price == null || price.decimalValue().compareTo(product.price) != 0) {
            line.put("price", product.price);
            changed = true;
        }
        return changed;
    }
}
