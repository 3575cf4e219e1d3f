package icebergdo;

import java.io.ByteArrayInputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import javax.xml.XMLConstants;
import javax.xml.parsers.DocumentBuilder;
import javax.xml.parsers.DocumentBuilderFactory;
import org.w3c.dom.Document;
import org.w3c.dom.Element;
import org.w3c.dom.Node;
import org.w3c.dom.NodeList;

/**
 * The S3 XML documents the FileIO reads and writes, through the JDK's DOM parser (javax.xml).
 *
 * The parser refuses DOCTYPEs and external entities: a response body is foreign input. S3
 * documents carry a default namespace, so elements are matched by local name.
 */
final class S3Xml {
  private S3Xml() {}

  static Element parse(String xml) {
    try {
      DocumentBuilderFactory factory = DocumentBuilderFactory.newInstance();
      factory.setNamespaceAware(true);
      factory.setXIncludeAware(false);
      factory.setExpandEntityReferences(false);
      try {
        factory.setFeature(XMLConstants.FEATURE_SECURE_PROCESSING, true);
        factory.setFeature("http://apache.org/xml/features/disallow-doctype-decl", true);
      } catch (javax.xml.parsers.ParserConfigurationException e) {
        // a parser without these features: entities stay unexpanded all the same
      }
      DocumentBuilder builder = factory.newDocumentBuilder();
      builder.setErrorHandler(null);
      Document doc = builder.parse(new ByteArrayInputStream(xml.getBytes(StandardCharsets.UTF_8)));
      return doc.getDocumentElement();
    } catch (Exception e) {
      String head = xml.length() > 200 ? xml.substring(0, 200) : xml;
      throw new IllegalArgumentException("not an S3 XML document: " + head, e);
    }
  }

  /** The direct children of `parent` named `name`. */
  static List<Element> children(Element parent, String name) {
    List<Element> out = new ArrayList<>();
    NodeList nodes = parent.getChildNodes();
    for (int i = 0; i < nodes.getLength(); i++) {
      Node n = nodes.item(i);
      if (n.getNodeType() == Node.ELEMENT_NODE && name.equals(localName(n))) {
        out.add((Element) n);
      }
    }
    return out;
  }

  /** The text of the first direct child named `name`, or null. */
  static String text(Element parent, String name) {
    List<Element> found = children(parent, name);
    return found.isEmpty() ? null : found.get(0).getTextContent().trim();
  }

  static String localName(Node n) {
    return n.getLocalName() != null ? n.getLocalName() : n.getNodeName();
  }

  /** `<Error><Code>` of an error document, or null when `xml` is not one. */
  static String errorCode(String xml) {
    if (xml == null || xml.isBlank()) {
      return null;
    }
    try {
      Element root = parse(xml);
      return "Error".equals(localName(root)) ? text(root, "Code") : null;
    } catch (IllegalArgumentException e) {
      return null;
    }
  }

  static String escape(String text) {
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\"", "&quot;").replace("'", "&apos;");
  }

  /** The body of a CompleteMultipartUpload request. */
  static String completeMultipart(List<String> etags) {
    StringBuilder sb = new StringBuilder("<CompleteMultipartUpload xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for (int i = 0; i < etags.size(); i++) {
      sb.append("<Part><PartNumber>").append(i + 1).append("</PartNumber><ETag>").append(escape(etags.get(i))).append("</ETag></Part>");
    }
    return sb.append("</CompleteMultipartUpload>").toString();
  }

  /** The body of a DeleteObjects request (quiet: the answer lists only the failures). */
  static String deleteObjects(List<String> keys) {
    StringBuilder sb = new StringBuilder("<Delete xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Quiet>true</Quiet>");
    for (String key : keys) {
      sb.append("<Object><Key>").append(escape(key)).append("</Key></Object>");
    }
    return sb.append("</Delete>").toString();
  }
}
