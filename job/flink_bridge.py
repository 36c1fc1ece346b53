"""The one place that touches PyFlink's private and JVM-side APIs.

Written against **Flink/PyFlink 2.0.2** (:data:`WRITTEN_FOR`). PyFlink's public Python API
cannot express a few things the job needs: a Java function or operator in the middle of a
Python-built topology, a Kafka serializer or deserializer of our own, the side outputs of a
Java operator. Everything of that kind is done here, through PyFlink internals that may change
in any release; the rest of the job calls these functions and never reaches past PyFlink's
public API (tests/unit/test_layout.py checks the source for it). ``job/jvm.py`` loads the
helper jar (``io.inboxflow.flink``) through the gateway too.

When upgrading Flink/PyFlink, check against the new version (and then set
:data:`WRITTEN_FOR`):

* ``io.inboxflow.flink.BatchCustomerOperator`` extends flink-python's embedded keyed operator
  ``org.apache.flink.streaming.api.operators.python.embedded.EmbeddedPythonKeyedProcessOperator``
  and overrides its per-element paths, state and timers: its constructor
  ``(Configuration, DataStreamPythonFunctionInfo, input type, output type)``, the hooks the
  Java class overrides, and the name ``"KEYED PROCESS"`` PyFlink gives that operator
  (:func:`embedded_keyed_process`);
* the function-info builder ``pyflink.datastream.data_stream.
  _create_j_data_stream_python_function_info`` and
  ``flink_fn_execution_pb2.UserDefinedDataStreamFunction.KEYED_PROCESS``
  (:func:`python_function_info`);
* the builders' ``_j_builder`` (``KafkaSinkBuilder.setRecordSerializer``,
  ``KafkaSourceBuilder.setDeserializer``);
* the wrappers' private fields and constructors: ``DataStream._j_data_stream``,
  ``DataStream(j_data_stream)``, ``KeyedStream(j_keyed_stream, original_data_type_info,
  origin_stream)``, ``StreamExecutionEnvironment._j_stream_execution_environment``;
* what PyFlink's ``key_by`` builds on the JVM (``KeyByKeySelector``, the key as a one-field
  Row), ``get_j_env_configuration``, ``PythonOptions.PYTHON_EXECUTION_MODE``,
  ``DeploymentOptions.ATTACHED`` and ``StreamExecutionEnvironment.getStreamGraph(boolean)``.

PyFlink is imported inside the functions, as elsewhere in the job: importing this module
starts nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyflink.common.typeinfo import TypeInformation
    from pyflink.datastream import DataStream, KeyedStream, StreamExecutionEnvironment

WRITTEN_FOR = "2.0.2"
log = logging.getLogger("inboxflow")
_version_checked = False


def check_version() -> None:
    """Logs a warning, once per process, when the installed PyFlink is not
    :data:`WRITTEN_FOR`: the functions here may then need the checks the module docstring
    lists."""
    global _version_checked
    if _version_checked:
        return
    _version_checked = True
    from pyflink.version import __version__

    if __version__ != WRITTEN_FOR:
        log.warning(
            "PyFlink %s is installed but job/flink_bridge.py was written against %s: check "
            "its private PyFlink APIs and io.inboxflow.flink.BatchCustomerOperator",
            __version__,
            WRITTEN_FOR,
        )


def _jvm() -> Any:
    from pyflink.java_gateway import get_gateway

    return get_gateway().jvm


def java_stream(stream: DataStream) -> Any:
    """The Java ``DataStream`` (a ``KeyedStream`` for a keyed one) behind ``stream``."""
    return stream._j_data_stream


def wrap(j_stream: Any) -> DataStream:
    """A PyFlink ``DataStream`` around the Java stream ``j_stream``."""
    from pyflink.datastream import DataStream

    return DataStream(j_stream)


def parallelism(stream: DataStream) -> int:
    """The parallelism of the operator that produces ``stream``."""
    return int(java_stream(stream).getParallelism())


def process_on_jvm(
    stream: DataStream, j_function: Any, output_type: TypeInformation, name: str, uid: str
) -> DataStream:
    """``stream.process`` with the Java ``ProcessFunction`` ``j_function`` (no Python), at
    the parallelism of ``stream``'s operator so that it chains to it (a forward edge, no
    network hop, no reordering)."""
    j_stream = java_stream(stream)
    j_processed = j_stream.process(j_function, output_type.get_java_type_info())
    j_processed.setParallelism(j_stream.getParallelism()).name(name).uid(uid)
    return wrap(j_processed)


def transform_on_jvm(
    stream: DataStream, j_operator: Any, output_type: TypeInformation, name: str, uid: str
) -> DataStream:
    """``stream`` through the Java ``OneInputStreamOperator`` ``j_operator`` (Java's
    ``DataStream.transform``), at the parallelism of ``stream``'s operator so that it chains
    to it, as :func:`process_on_jvm` does for a function."""
    j_stream = java_stream(stream)
    j_transformed = j_stream.transform(name, output_type.get_java_type_info(), j_operator)
    j_transformed.setParallelism(j_stream.getParallelism()).uid(uid)
    return wrap(j_transformed)


def connect_on_jvm(
    first: DataStream,
    second: DataStream,
    j_operator: Any,
    output_type: TypeInformation,
    name: str,
    uid: str,
) -> DataStream:
    """``first`` connected with ``second`` through the Java ``TwoInputStreamOperator``
    ``j_operator`` (Java's ``ConnectedStreams.transform``), at the parallelism of ``first``'s
    operator: a forward edge from ``first``, so each of its subtasks keeps its order.
    ``second`` keeps its own partitioning (e.g. ``broadcast()``)."""
    j_first = java_stream(first)
    j_joined = j_first.connect(java_stream(second)).transform(
        name, output_type.get_java_type_info(), j_operator
    )
    j_joined.setParallelism(j_first.getParallelism()).uid(uid)
    return wrap(j_joined)


def key_by_first_field(
    stream: DataStream, key_type: TypeInformation, value_type: TypeInformation
) -> KeyedStream:
    """``stream`` of ``Row(key, value)`` keyed by ``key`` (of ``key_type``), with no Python
    key selector: the JVM-side half of PyFlink's own ``key_by``, which maps every element to
    that shape in Python first. The keyed stream's elements are the ``value`` fields, of
    ``value_type``."""
    from pyflink.common import Types
    from pyflink.datastream import KeyedStream

    j_stream = java_stream(stream)
    j_keyed = j_stream.keyBy(_jvm().KeyByKeySelector(), Types.ROW([key_type]).get_java_type_info())
    return KeyedStream(j_keyed, value_type, wrap(j_stream))


def side_output(stream: DataStream, j_tag: Any) -> DataStream:
    """The side output of ``stream``'s operator with the Java ``OutputTag`` ``j_tag``.
    PyFlink's ``get_side_output`` takes only its own tags and adds a Python map."""
    return wrap(java_stream(stream).getSideOutput(j_tag))


def _configuration(stream: DataStream) -> Any:
    """The Java ``Configuration`` of the environment ``stream`` belongs to."""
    from pyflink.util.java_utils import get_j_env_configuration

    return get_j_env_configuration(java_stream(stream).getExecutionEnvironment())


def is_thread_mode(stream: DataStream) -> bool:
    """Whether Python functions of ``stream``'s environment run in thread mode
    (``python.execution-mode: thread``: an interpreter embedded in the JVM)."""
    mode = _jvm().org.apache.flink.python.PythonOptions.PYTHON_EXECUTION_MODE
    return bool(_configuration(stream).get(mode) == "thread")


def python_function_info(function: Any) -> Any:
    """The Java ``DataStreamPythonFunctionInfo`` of the keyed process function ``function``
    (pickled), as PyFlink builds it for ``KeyedStream.process``."""
    from pyflink.datastream.data_stream import (
        _create_j_data_stream_python_function_info,
    )
    from pyflink.fn_execution.flink_fn_execution_pb2 import (
        UserDefinedDataStreamFunction,
    )

    return _create_j_data_stream_python_function_info(
        function, UserDefinedDataStreamFunction.KEYED_PROCESS
    )


def embedded_keyed_process(
    keyed: KeyedStream,
    function: Any,
    output_type: TypeInformation,
    operator_class: Any,
    *operator_args: Any,
) -> DataStream:
    """``keyed.process(function, output_type)`` with the Java operator ``operator_class``, a
    subclass of flink-python's ``EmbeddedPythonKeyedProcessOperator`` (thread mode only),
    built from that operator's arguments (configuration, function info, input type, output
    type) followed by ``operator_args``. The operator is named ``"KEYED PROCESS"``, as PyFlink
    names its own."""
    j_stream = java_stream(keyed)
    j_operator = operator_class(
        _configuration(keyed),
        python_function_info(function),
        j_stream.getTransformation().getOutputType(),
        output_type.get_java_type_info(),
        *operator_args,
    )
    return wrap(j_stream.transform("KEYED PROCESS", output_type.get_java_type_info(), j_operator))


def set_record_serializer(builder: Any, j_serializer: Any) -> None:
    """Sets the Java ``KafkaRecordSerializationSchema`` of a PyFlink ``KafkaSinkBuilder``:
    its ``set_record_serializer`` only accepts the schemas of its own builder."""
    builder._j_builder.setRecordSerializer(j_serializer)


def set_deserializer(builder: Any, j_deserializer: Any) -> None:
    """Sets the Java ``KafkaRecordDeserializationSchema`` of a PyFlink
    ``KafkaSourceBuilder``: it only offers ``set_value_only_deserializer``."""
    builder._j_builder.setDeserializer(j_deserializer)


def is_detached(env: StreamExecutionEnvironment) -> bool:
    """``flink run -d``: the client returns once the job is submitted."""
    from pyflink.util.java_utils import get_j_env_configuration

    options = _jvm().org.apache.flink.configuration.DeploymentOptions
    return not get_j_env_configuration(env._j_stream_execution_environment).get(options.ATTACHED)


def stream_graph(env: StreamExecutionEnvironment) -> Any:
    """The Java ``StreamGraph`` of what ``env`` holds, its transformations kept (so it can
    still be executed)."""
    return env._j_stream_execution_environment.getStreamGraph(False)


def java_map(values: Mapping[str, str]) -> Any:
    """A ``java.util.HashMap`` with ``values``."""
    j_map = _jvm().java.util.HashMap()
    for key, value in values.items():
        j_map.put(key, value)
    return j_map


def system_property(name: str) -> str | None:
    """The system property ``name`` of the gateway's JVM (e.g. ``log.file``)."""
    value = _jvm().System.getProperty(name)
    return None if value is None else str(value)
